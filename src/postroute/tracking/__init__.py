"""Open, click and unsubscribe endpoints (/t/o, /t/c, /t/u) and how their hits are
recorded: machine or human, first or not, durably without waiting on the database."""
