-- The series each per-record recurring event runs for each record: the one that
-- `set_recurring_event` started last, and none once it said `frequency: none`. A tick of a
-- series is written only while its series is its record's current one (`enqueue_jobs`), and
-- a worker runs a tick it claimed only while its series is still current (`current_series`):
-- a series stopped or replaced, even from its own tick's run, gets no tick after the one
-- running, and never runs beside its replacement.
CREATE TABLE gateway_series (
    workflow text NOT NULL,
    subject  text NOT NULL,
    series   text NOT NULL,
    PRIMARY KEY (workflow, subject)
);

-- What runs now: the series of each record's newest tick to run (a tick written before
-- ticks named their series is a series of its own, as its next tick names it).
INSERT INTO gateway_series (workflow, subject, series)
SELECT DISTINCT ON (workflow, subject) workflow, subject, coalesce(data ->> 'series', id)
FROM gateway_jobs
WHERE source = 'recurring' AND subject IS NOT NULL AND status IN ('pending', 'running')
ORDER BY workflow, subject, created_at DESC, id DESC;
