# examples: targets are added here as the folder fills.
