"""`report.html` of a sorting: one self-contained page, written from its manifests and files after each
step."""
