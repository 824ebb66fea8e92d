"""The file formats, read the same way by everyone: fetchdata's scanner, the chunker and the
SDK's apps (CSV, JSON Lines, JSON arrays, Parquet; UTF-8 checks; byte spans of a file; a replay's line
map). Depends on ``domain`` and ``errors`` only; nothing here touches a store or a broker."""
