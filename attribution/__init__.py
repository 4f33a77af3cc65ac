"""Graph-based account attribution engine.

Finds fleets of coordinated accounts in a property graph of accounts and the
payment methods, devices, IPs and proxies they use, scores how inauthentic each
fleet is, and attributes it to an organization with a calibrated confidence.
"""

__version__ = "0.1.0"
