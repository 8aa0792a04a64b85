"""The HTTP routes, one module per resource, each with its `router` (`create_app` includes them).

Handlers translate HTTP to records and back; the work is the engine's (reads) or the service
layer's (writes), and errors are exceptions that `app` maps to responses.
"""
