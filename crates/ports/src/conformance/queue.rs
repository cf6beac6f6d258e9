//! Conformance tests of the queue port.

/// Lists this group's tests for [`crate::conformance_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_queue {
    (#[$attr:meta] $factory:ident) => {
        $crate::__conformance_group!(
            #[$attr]
            $factory,
            conformance_queue,
            queue,
            []
        );
    };
}
