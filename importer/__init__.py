"""Fetch, verify and cache appliances; boot them under libvirt; update them in place."""
