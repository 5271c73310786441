"""Routing policies: one per module, each behind the one-method RoutingPolicy interface."""
