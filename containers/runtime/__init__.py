"""The step program's runtime: thread caps, progress files, and running one step to its manifest."""
