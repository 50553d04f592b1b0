"""``rabbitflow dashboard``: the topology live and dead letters a click away (DESIGN.md §11).

Needs the ``dashboard`` extra (Starlette, uvicorn). The page is server-rendered HTML with
an inline SVG graph and one small script of our own (``static/dashboard.js``): no browser
library, no build step.
"""
