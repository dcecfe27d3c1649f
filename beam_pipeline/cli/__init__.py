"""The command lines: the main job, reprocessing, and the option groups they share."""
