//! How the service words a duration, everywhere a person reads one (probe summaries, diagnoses,
//! watchdog verdicts, Slack and PagerDuty messages, escalations, restore tests). Imports nothing
//! else of the crate.

/// An age or a wait, to the minute: the largest unit and the next one down, the smaller left
/// out when it is zero. Hours up to three days (RPOs are counted in hours), then days.
/// "42 s", "12 min", "3 h", "26 h 5 min", "4 d", "4 d 2 h". A negative duration (a clock a
/// little ahead) reads as "0 s".
pub fn human(seconds: i64) -> String {
    let s = seconds.max(0);
    let (days, hours, minutes) = (s / 86_400, s / 3600, (s % 3600) / 60);
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{minutes} min"),
        3600..=259_199 => with_rest(hours, "h", minutes, "min"),
        _ => with_rest(days, "d", hours % 24, "h"),
    }
}

fn with_rest(n: i64, unit: &str, rest: i64, rest_unit: &str) -> String {
    if rest == 0 {
        format!("{n} {unit}")
    } else {
        format!("{n} {unit} {rest} {rest_unit}")
    }
}

/// A measured duration in seconds, as precise as a comparison against a limit needs: "31.0 s",
/// or "0.060 s" under a second.
pub fn measured(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.1} s")
    } else {
        format!("{seconds:.3} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_a_minute_reads_in_seconds_and_a_clock_ahead_reads_as_zero() {
        assert_eq!(human(0), "0 s");
        assert_eq!(human(42), "42 s");
        assert_eq!(human(59), "59 s");
        assert_eq!(human(-5), "0 s");
    }

    #[test]
    fn under_an_hour_reads_in_whole_minutes() {
        assert_eq!(human(60), "1 min");
        assert_eq!(human(12 * 60 + 5), "12 min");
        assert_eq!(human(3599), "59 min");
    }

    #[test]
    fn ages_read_in_hours_and_minutes_up_to_three_days() {
        assert_eq!(human(3600), "1 h");
        assert_eq!(human(3 * 3600 + 59), "3 h");
        assert_eq!(human(3 * 3600 + 12 * 60), "3 h 12 min");
        assert_eq!(human(26 * 3600 + 5 * 60), "26 h 5 min");
        assert_eq!(human(30 * 3600), "30 h");
        assert_eq!(human(71 * 3600 + 59 * 60), "71 h 59 min");
    }

    #[test]
    fn from_three_days_on_ages_read_in_days_and_hours() {
        assert_eq!(human(3 * 86_400), "3 d");
        assert_eq!(human(4 * 86_400 + 2 * 3600), "4 d 2 h");
        assert_eq!(human(5 * 86_400 + 59 * 60), "5 d");
        assert_eq!(human(400 * 86_400 + 23 * 3600), "400 d 23 h");
    }

    #[test]
    fn measured_durations_keep_tenths_and_milliseconds_under_a_second() {
        assert_eq!(measured(31.04), "31.0 s");
        assert_eq!(measured(450.0), "450.0 s");
        assert_eq!(measured(0.06), "0.060 s");
    }
}
