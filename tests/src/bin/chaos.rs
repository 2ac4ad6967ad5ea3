//! Real-process chaos: the command line of [`baton_tests::chaos`], where the runner and
//! its documentation live. Normally called by `tests/chaos/run`.

fn main() {
    baton_tests::chaos::main()
}
