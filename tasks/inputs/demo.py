"""The demo world's names: where `wisc-sort demo` sorts, and what containers/demo/world.py writes."""

PROJECT = "shared_ssd"
SUBJECT = "DEMO1-Mouse"
EXPERIMENT = "demo_experiment"
ALIAS = "full"
PROBE = "imec0"
