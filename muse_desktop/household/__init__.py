"""The household: settings, the caregiver's lock and the kiosk's scope guard."""
