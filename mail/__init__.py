"""heard: the mail channel (IMAP sync, parsing, threading, auto-replies, sending)."""
