"""phy's formats: the curation gate, params.py, and whether a sort finished."""
