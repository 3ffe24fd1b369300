"""Options files: the sorting and postprocessing schemas, the one chain model, adopting the options in
force."""
