"""The O2O dashboard: KPI pages for store and online teams, served read-only or written as one HTML file.

``filters`` parses the date range, model, store and channel carried in a
page's URL; ``pages`` holds each page's queries and what to draw from them;
``charts`` and ``html`` turn query results into self-contained HTML (inline
SVG, no script, no CDN); ``server`` serves the pages on 127.0.0.1 through
the same read-only query path as ``o2o sql``.
"""
