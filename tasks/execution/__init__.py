"""Running a step program: the local and docker executors, images, the GPU lease, the central scheduler."""
