"""esper-ab."""
