//! RunConvert's operations as plain functions over files in a work directory.
//!
//! No HTTP, no database, no cloud SDK: the embedded executor and the per-operation
//! Lambdas call the very same functions. Each engine registers what it can do in the
//! core [`Registry`], which is what the API reports and the worker consults.

pub mod raster;

use runconvert_core::formats::Registry;

/// Limits every engine honours.
#[derive(Debug, Clone)]
pub struct EngineLimits {
    /// Largest image (width × height) an engine will decode.
    pub max_pixels: u64,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            max_pixels: 150_000_000,
        }
    }
}

/// Registers every engine this build has.
pub fn register_all(registry: &mut Registry) {
    raster::register(registry);
}
