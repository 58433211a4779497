"""HTTP API and web page for trained Folio models (`folio serve`)."""
