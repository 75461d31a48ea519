"""Literature AI Gateway: an AI gateway and full-text detection service."""
