"""The project CLI (`./drc`): one command per pipeline step; it may use every layer, no layer uses it."""
