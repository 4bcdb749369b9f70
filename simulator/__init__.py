"""Synthetic member systems of the 荥阳 medical community, with dirt and a separate answer key."""
