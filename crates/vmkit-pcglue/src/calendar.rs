//! Proleptic Gregorian calendar arithmetic for the RTC, with no external date crate.
//!
//! Days are counted from the Unix epoch (1970-01-01 is day 0, earlier days are negative).
//! Internally the year is taken to start on 1 March, so the leap day is the last day of a
//! "computing year" and a 400-year cycle (146 097 days) splits into four centuries, the last
//! of which is one day longer, then into four-year groups, then into years.

/// Days in a 400-year Gregorian cycle.
const DAYS_PER_400_YEARS: i64 = 146_097;
/// Days in a century that does not end on a year divisible by 400.
const DAYS_PER_SHORT_CENTURY: i64 = 36_524;
/// Days in four years that include one leap day.
const DAYS_PER_4_YEARS: i64 = 1_461;
/// Days from 0000-03-01 (start of a 400-year cycle, March-based) to 1970-01-01.
const DAYS_FROM_CYCLE_START_TO_EPOCH: i64 = 719_468;
/// Day of the March-based year on which each month starts: Mar, Apr, ..., Jan, Feb.
const MONTH_START_FROM_MARCH: [i64; 12] = [0, 31, 61, 92, 122, 153, 184, 214, 245, 275, 306, 337];

/// Seconds in a day.
pub const SECONDS_PER_DAY: i64 = 86_400;

/// Whether `year` has a 29 February in the Gregorian calendar.
pub fn is_leap_year(year: i64) -> bool {
    year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0)
}

/// Days since 1970-01-01 of the given date.
///
/// `month` is clamped to 1..=12. `day` is taken linearly, so day 0 is the last day of the
/// previous month and day 32 of January is 1 February: a guest that writes an impossible
/// date gets a well-defined nearby date, never a panic.
pub fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let month = i64::from(month.clamp(1, 12));
    // January and February belong to the previous March-based year.
    let (march_year, month_from_march) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let cycle = march_year.div_euclid(400);
    let year_of_cycle = march_year.rem_euclid(400);
    let start_of_month = MONTH_START_FROM_MARCH
        .get(usize::try_from(month_from_march).unwrap_or(0))
        .copied()
        .unwrap_or(0);
    let day_of_year = start_of_month + i64::from(day) - 1;
    let day_of_cycle = year_of_cycle * 365 + year_of_cycle / 4 - year_of_cycle / 100 + day_of_year;
    cycle * DAYS_PER_400_YEARS + day_of_cycle - DAYS_FROM_CYCLE_START_TO_EPOCH
}

/// The date `(year, month 1..=12, day 1..=31)` of a day counted from 1970-01-01.
///
/// Valid for any `days` whose year fits in an `i64` (far beyond any RTC's range).
pub fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let since_cycle_origin = days.saturating_add(DAYS_FROM_CYCLE_START_TO_EPOCH);
    let cycle = since_cycle_origin.div_euclid(DAYS_PER_400_YEARS);
    let mut rest = since_cycle_origin.rem_euclid(DAYS_PER_400_YEARS);
    // The fourth century of a cycle holds the extra day (its last February is in a year
    // divisible by 400), hence the clamp.
    let century = (rest / DAYS_PER_SHORT_CENTURY).min(3);
    rest -= century * DAYS_PER_SHORT_CENTURY;
    let four_years = rest / DAYS_PER_4_YEARS;
    rest -= four_years * DAYS_PER_4_YEARS;
    // The fourth year of a group holds the leap day.
    let year_of_group = (rest / 365).min(3);
    rest -= year_of_group * 365;
    let march_year = cycle * 400 + century * 100 + four_years * 4 + year_of_group;

    let month_from_march = MONTH_START_FROM_MARCH
        .iter()
        .rposition(|&start| start <= rest)
        .unwrap_or(0);
    let start_of_month = MONTH_START_FROM_MARCH
        .get(month_from_march)
        .copied()
        .unwrap_or(0);
    // Both are small (month index < 12, day < 32), so the narrowing cannot fail.
    let day = u8::try_from(rest - start_of_month + 1).unwrap_or(1);
    let month_from_march = u8::try_from(month_from_march).unwrap_or(0);
    if month_from_march < 10 {
        (march_year, month_from_march + 3, day)
    } else {
        (march_year + 1, month_from_march - 9, day)
    }
}

/// A broken-down UTC date and time, as an RTC shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// Full year, e.g. 2024.
    pub year: i64,
    /// Month, 1..=12.
    pub month: u8,
    /// Day of the month, 1..=31.
    pub day: u8,
    /// Hour, 0..=23.
    pub hour: u8,
    /// Minute, 0..=59.
    pub minute: u8,
    /// Second, 0..=59.
    pub second: u8,
    /// Day of the week, 0 = Sunday .. 6 = Saturday.
    pub weekday: u8,
}

impl DateTime {
    /// The date and time `unix_seconds` after 1970-01-01T00:00:00Z (negative: before it).
    pub fn from_unix(unix_seconds: i64) -> Self {
        let days = unix_seconds.div_euclid(SECONDS_PER_DAY);
        let second_of_day = unix_seconds.rem_euclid(SECONDS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        // 1970-01-01 was a Thursday (4 with Sunday = 0).
        let weekday = (days.rem_euclid(7) + 4) % 7;
        // Each value below is bounded by its modulus, so the narrowing cannot fail.
        let narrow = |v: i64| u8::try_from(v).unwrap_or(0);
        Self {
            year,
            month,
            day,
            hour: narrow(second_of_day / 3600),
            minute: narrow(second_of_day / 60 % 60),
            second: narrow(second_of_day % 60),
            weekday: narrow(weekday),
        }
    }

    /// Seconds since 1970-01-01T00:00:00Z. `weekday` is ignored; out-of-range fields roll
    /// over (hour 24 is midnight of the next day) as in [`days_from_civil`].
    pub fn to_unix(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day)
            .saturating_mul(SECONDS_PER_DAY)
            .saturating_add(i64::from(self.hour) * 3600)
            .saturating_add(i64::from(self.minute) * 60)
            .saturating_add(i64::from(self.second))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Independent reference: walk year by year and month by month from 1970.
    fn reference_days(year: i64, month: u8, day: u8) -> i64 {
        let month_lengths = |y: i64| {
            [
                31,
                if is_leap_year(y) { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ]
        };
        let mut days = 0i64;
        if year >= 1970 {
            for y in 1970..year {
                days += if is_leap_year(y) { 366 } else { 365 };
            }
        } else {
            for y in year..1970 {
                days -= if is_leap_year(y) { 366 } else { 365 };
            }
        }
        for m in 0..usize::from(month - 1) {
            days += month_lengths(year)[m];
        }
        days + i64::from(day) - 1
    }

    #[test]
    fn leap_year_rules() {
        // Gregorian rule: every 4th year, except centuries, except every 400th year.
        assert!(is_leap_year(2024));
        assert!(is_leap_year(2000));
        assert!(!is_leap_year(1900));
        assert!(!is_leap_year(2100));
        assert!(!is_leap_year(2023));
        assert!(is_leap_year(0));
    }

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // 2000-03-01 follows 2000-02-29 (2000 is a leap year: divisible by 400).
        let feb29_2000 = days_from_civil(2000, 2, 29);
        assert_eq!(civil_from_days(feb29_2000), (2000, 2, 29));
        assert_eq!(civil_from_days(feb29_2000 + 1), (2000, 3, 1));
        // 1900 and 2100 are not leap years: 28 February is followed by 1 March.
        let feb28_1900 = days_from_civil(1900, 2, 28);
        assert_eq!(civil_from_days(feb28_1900 + 1), (1900, 3, 1));
        let feb28_2100 = days_from_civil(2100, 2, 28);
        assert_eq!(civil_from_days(feb28_2100 + 1), (2100, 3, 1));
        // Century boundaries.
        assert_eq!(
            civil_from_days(days_from_civil(1999, 12, 31) + 1),
            (2000, 1, 1)
        );
        assert_eq!(
            civil_from_days(days_from_civil(2099, 12, 31) + 1),
            (2100, 1, 1)
        );
        // The 32-bit time_t rollover day.
        assert_eq!(DateTime::from_unix(2_147_483_647).year, 2038);
        assert_eq!(civil_from_days(2_147_483_647 / 86_400), (2038, 1, 19));
    }

    #[test]
    fn matches_year_walk_from_1600_to_2500() {
        for year in [
            1600, 1700, 1899, 1900, 1969, 1970, 1996, 2000, 2001, 2099, 2100, 2400, 2500,
        ] {
            for month in 1..=12u8 {
                for day in [1u8, 15, 28] {
                    let days = days_from_civil(year, month, day);
                    assert_eq!(
                        days,
                        reference_days(year, month, day),
                        "{year}-{month}-{day}"
                    );
                    assert_eq!(civil_from_days(days), (year, month, day));
                }
            }
        }
    }

    #[test]
    fn weekdays() {
        // 1970-01-01 Thursday, 2000-01-01 Saturday, 2024-02-29 Thursday, 1900-01-01 Monday.
        assert_eq!(DateTime::from_unix(0).weekday, 4);
        assert_eq!(DateTime::from_unix(946_684_800).weekday, 6);
        assert_eq!(
            DateTime::from_unix(days_from_civil(2024, 2, 29) * SECONDS_PER_DAY).weekday,
            4
        );
        assert_eq!(
            DateTime::from_unix(days_from_civil(1900, 1, 1) * SECONDS_PER_DAY).weekday,
            1
        );
    }

    #[test]
    fn lenient_fields_roll_over() {
        // Day 0 is the last day of the previous month; hour 24 is the next midnight.
        assert_eq!(days_from_civil(2024, 3, 0), days_from_civil(2024, 2, 29));
        let dt = DateTime {
            year: 2023,
            month: 12,
            day: 31,
            hour: 24,
            minute: 0,
            second: 0,
            weekday: 0,
        };
        assert_eq!(DateTime::from_unix(dt.to_unix()).year, 2024);
        assert_eq!(days_from_civil(2024, 13, 1), days_from_civil(2024, 12, 1));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn days_round_trip(days in -1_000_000i64..4_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!((1..=12).contains(&m));
            prop_assert!((1..=31).contains(&d));
            prop_assert_eq!(days_from_civil(y, m, d), days);
            // The next day is either the next day of the month or the 1st of the next month.
            let (y2, m2, d2) = civil_from_days(days + 1);
            prop_assert!(
                (y2, m2, d2) == (y, m, d + 1)
                    || (d2 == 1 && ((y2 == y && m2 == m + 1) || (y2 == y + 1 && m == 12 && m2 == 1)))
            );
        }

        #[test]
        fn seconds_round_trip(secs in -100_000_000_000i64..300_000_000_000) {
            let dt = DateTime::from_unix(secs);
            prop_assert!(dt.hour < 24 && dt.minute < 60 && dt.second < 60 && dt.weekday < 7);
            prop_assert_eq!(dt.to_unix(), secs);
        }
    }
}
