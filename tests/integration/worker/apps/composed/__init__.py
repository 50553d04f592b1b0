"""An application composed of routers from two modules, with a lifespan (DESIGN.md §7)."""
