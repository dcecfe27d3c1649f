"""Reading inputs: which files a split has (discovery), the labels file, local-file safety and read limits."""
