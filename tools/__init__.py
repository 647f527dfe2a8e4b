"""Development tools (mutation testing); not part of the installed package."""
