"""Framework runtimes: one module per framework, each a plugin of the ``aiservice.runtimes`` group."""
