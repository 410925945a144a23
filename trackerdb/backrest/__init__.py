"""pgBackRest on the new host: configuration, SSH trust, stanza ownership, archive health, backups."""
