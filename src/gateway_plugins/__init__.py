"""Built-in plugins, registered through the distribution's own entry points."""
