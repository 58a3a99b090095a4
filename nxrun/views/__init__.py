"""Read-only views of a workspace: show/why/history/cache stats (inspect.py), the text graph
(graph_view.py), the graph page (graph_page.py) and the report (report.py)."""
