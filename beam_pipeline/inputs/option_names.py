"""Command-line option names that the input readers name in their messages (a hint says which option
to use), in a module that imports no Beam: the command lines define these options before loading it."""

NORMAL_LABELS_OPTION = "--normal_labels"
"""The command-line option that sets `normal_labels`, named in the hint of a labels-file summary."""
