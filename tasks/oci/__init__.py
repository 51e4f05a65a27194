"""Oracle Cloud for the A1 launch: the SDK client, the stored campaign, the campaign's decisions."""
