"""The rehearsal: run the whole production sequence on the lab, report it, and sign it off."""
