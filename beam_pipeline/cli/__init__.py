"""The command lines: the main job, reprocessing, and the option groups and exit outcomes they share."""
