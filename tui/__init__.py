"""heard: the Textual app and the command line."""
