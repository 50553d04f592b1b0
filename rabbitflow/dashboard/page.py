"""The dashboard's one HTML page; the figures and dead letters arrive as JSON."""

from __future__ import annotations

from html import escape

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="rabbitflow-csrf" content="{csrf}">
<meta name="rabbitflow-read-only" content="{read_only}">
<title>rabbitflow · {vhost}</title>
<link rel="stylesheet" href="static/dashboard.css">
<script src="static/dashboard.js" defer></script>
</head>
<body class="{body_class}">
<header>
  <h1>rabbitflow</h1>
  <span class="where">vhost <b>{vhost}</b> on <code id="broker">{broker}</code>
    · topology from {origin}</span>
  {badge}
  <span id="updated" class="updated">connecting…</span>
</header>
<div id="note" class="note" hidden></div>
<div id="report" class="report" role="status" hidden></div>
<main>
<section class="graph" aria-label="topology">{svg}</section>
<section class="queues">
  <h2>Queues</h2>
  <table id="queues">
    <thead><tr><th>queue</th><th>type</th><th>ready</th><th>unacked</th><th>consumers</th>
    <th>publish/s</th><th>deliver/s</th><th>retrying</th><th>dead letters</th></tr></thead>
    <tbody></tbody>
  </table>
</section>
<section id="dead" class="dead" hidden>
  <h2>Dead letters of <span id="dead-queue"></span> <small id="dead-dlq"></small>
    <button type="button" id="dead-close" class="link">close</button></h2>
  <form id="dead-filter" class="filter">
    <label>error contains <input name="error" id="filter-error" autocomplete="off"></label>
    <label>header <input name="header" id="filter-header" placeholder="NAME=PATTERN"
      autocomplete="off"></label>
    <button type="submit">filter</button>
    {actions}
  </form>
  <p id="dead-summary" class="summary"></p>
  <table id="letters">
    <thead><tr>{select_head}<th>#</th><th>message id</th><th>error</th><th>attempt</th>
    <th>failed at</th>
    <th>published to</th><th></th></tr></thead>
    <tbody></tbody>
  </table>
  <nav class="pager"><button type="button" id="prev">&larr; previous</button>
  <span id="page-info"></span><button type="button" id="next">next &rarr;</button></nav>
</section>
</main>
{dialog}
</body>
</html>
"""


_ACTIONS = """<span class="actions">
      <button type="button" id="replay-selected" class="act" disabled>replay selected</button>
      <button type="button" id="replay-matching" class="act">replay all matching</button>
      <button type="button" id="purge" class="act danger">purge</button>
    </span>"""
_SELECT_HEAD = (
    '<th class="act"><input type="checkbox" id="select-page" title="select this page"></th>'
)
_DIALOG = """<dialog id="confirm">
  <form method="dialog">
    <p id="confirm-text"></p>
    <menu><button value="cancel" id="confirm-cancel">Cancel</button>
    <button value="ok" id="confirm-ok" class="danger">Confirm</button></menu>
  </form>
</dialog>
"""


def render_page(
    *, svg: str, broker: str, vhost: str, origin: str, csrf: str, read_only: bool
) -> str:
    """The page, with the graph inline. ``broker`` must already be masked."""
    return _PAGE.format(
        svg=svg,
        broker=escape(broker),
        vhost=escape(vhost),
        origin=escape(origin),
        csrf=escape(csrf),
        read_only="true" if read_only else "false",
        body_class="read-only" if read_only else "",
        badge='<span class="badge">read-only</span>' if read_only else "",
        actions="" if read_only else _ACTIONS,
        select_head="" if read_only else _SELECT_HEAD,
        dialog="" if read_only else _DIALOG,
    )
