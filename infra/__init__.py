"""Infrastructure that surrounds the gateway but is not part of it (test sandbox, tooling)."""
