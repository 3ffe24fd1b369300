"""Finalize: clear the fast drive and move a sorting home without losing a byte."""
