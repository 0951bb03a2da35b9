"""The suppression list: addresses an account does not mail, checked when a message is
submitted and again before it is sent; added from hard bounces, complaints,
unsubscribes, by hand and by CSV import."""
