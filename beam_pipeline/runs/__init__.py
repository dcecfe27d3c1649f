"""Runs: the main job and reprocessing, the Beam helpers and summary they share, what may be written
over (output_guard), publishing, the lock, stopping on SIGTERM/SIGINT (interruption), the ledger and
the error budget."""
