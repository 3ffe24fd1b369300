"""Step programs that run inside the images (or locally): `python -m containers <step> <sorting_dir>`."""
