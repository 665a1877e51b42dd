//! Page lists (`all`, `1-3,5,8-`): the option of every operation that works on some
//! pages of a PDF, checked when the job is created and read again when it runs.

/// Which pages of a PDF an operation applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageSelection {
    All,
    /// Inclusive ranges, 1-based; `None` as the end means "to the last page".
    Ranges(Vec<(u32, Option<u32>)>),
}

impl PageSelection {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("all") {
            return Ok(PageSelection::All);
        }
        let err = || format!("pages must be `all` or a list like `1-3,5,8-`, got {s:?}");
        let mut ranges = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let (a, b) = match part.split_once('-') {
                Some((a, "")) => (a.trim().parse::<u32>().map_err(|_| err())?, None),
                Some((a, b)) => {
                    let (a, b) = (
                        a.trim().parse::<u32>().map_err(|_| err())?,
                        b.trim().parse::<u32>().map_err(|_| err())?,
                    );
                    if b < a {
                        return Err(err());
                    }
                    (a, Some(b))
                }
                None => {
                    let n = part.parse::<u32>().map_err(|_| err())?;
                    (n, Some(n))
                }
            };
            if a == 0 {
                return Err(format!("pages are numbered from 1, got {s:?}"));
            }
            ranges.push((a, b));
        }
        Ok(PageSelection::Ranges(ranges))
    }

    pub fn contains(&self, page: u32) -> bool {
        match self {
            PageSelection::All => true,
            PageSelection::Ranges(r) => r.iter().any(|(a, b)| page >= *a && b.is_none_or(|b| page <= b)),
        }
    }

    /// The selected pages of a document of `count` pages, in order.
    pub fn pages(&self, count: u32) -> Vec<u32> {
        (1..=count).filter(|p| self.contains(*p)).collect()
    }
}
