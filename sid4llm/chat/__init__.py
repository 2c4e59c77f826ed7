"""Chat: mentions of items in free text, the request a conversation makes, the sentence the instruct LM writes
around the list, and the chat benchmark. Every sentence it writes comes from the catalogue's profile."""
