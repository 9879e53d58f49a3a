"""The PB service: logins, sessions, rooms and the wire to clients."""
