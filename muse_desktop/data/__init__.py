"""Training data: reading datasets, building them from documents, augmenting, downloading."""
