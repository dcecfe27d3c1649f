"""Runs: the main job and reprocessing, the Beam helpers and summary they share, publishing, the lock,
the ledger and the error budget."""
