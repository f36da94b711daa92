"""`reconciler serve`: the jobs page, JSON API, webhook receiver and metrics (an adapter at the edge).

Read-only: nothing here changes desired state; a webhook only asks the background runner to look.
"""
