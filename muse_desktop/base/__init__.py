"""The ground floor: errors, events, atomic files, child processes, paths, safe unpickling and the
prompt contract. It imports nothing else of the app (the import contracts keep it so)."""
