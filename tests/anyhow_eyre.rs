//! anyhow and eyre as a nursery's error type (features `anyhow` and `eyre`):
//! a `Cancelled` inside them, however deep, is recognised, so nested
//! nurseries and scopes unwind and catch as with any other error type.
#![cfg(all(feature = "anyhow", feature = "eyre"))]

use hatchery::{CancelScope, Nursery, checkpoint, sleep_forever, typed};

/// Nested nurseries and a scope, with `E` as the error type of all of them:
/// the outer cancel reaches the innermost task and is caught where it
/// belongs; a context added on the way does not hide it; a real error still
/// comes out.
macro_rules! nest_with {
    ($name:ident, $error:ty, $context:path, $with_context:ident, $make:expr) => {
        #[test]
        fn $name() {
            use $context;
            let out =
                futures::executor::block_on(typed::nursery(|n: Nursery<'_, $error>| async move {
                    n.spawn(async {
                        typed::nursery(|m: Nursery<'_, $error>| async move {
                            m.spawn(async {
                                sleep_forever().await.$with_context(|| "waiting")?;
                                Ok(())
                            });
                            sleep_forever().await?;
                            Ok(())
                        })
                        .await?;
                        Ok(())
                    });
                    checkpoint().await?;
                    n.cancel_scope().cancel();
                    Ok("body")
                }));
            assert_eq!(
                out.unwrap(),
                Some("body"),
                "the nursery caught its own cancel"
            );

            let scope = CancelScope::new();
            scope.handle().cancel();
            let out = futures::executor::block_on(scope.run_typed(async {
                checkpoint().await.$with_context(|| "a checkpoint")?;
                Ok::<_, $error>(())
            }));
            assert!(matches!(out, Ok(None)), "{out:?}");

            let out =
                futures::executor::block_on(typed::nursery(|n: Nursery<'_, $error>| async move {
                    n.spawn(async { Err($make) });
                    Ok(())
                }));
            let error = out.unwrap_err();
            assert_eq!(error.failures().len(), 1);
            assert_eq!(error.failures()[0].error.to_string(), "a real failure");
        }
    };
}

nest_with!(
    anyhow_nests_and_recognises_cancellation,
    anyhow::Error,
    anyhow::Context,
    with_context,
    anyhow::anyhow!("a real failure")
);
nest_with!(
    eyre_nests_and_recognises_cancellation,
    eyre::Report,
    eyre::WrapErr,
    wrap_err_with,
    eyre::eyre!("a real failure")
);
