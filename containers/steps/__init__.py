"""One module per step, each exposing `run(ctx)`: what the step computes and writes."""
