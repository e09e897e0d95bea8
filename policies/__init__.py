"""The policies shipped with viewbox (installed as the package viewbox.policies)."""
