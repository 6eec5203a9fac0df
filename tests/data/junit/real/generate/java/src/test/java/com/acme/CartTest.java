package com.acme;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.io.IOException;
import org.junit.Assume;
import org.junit.Ignore;
import org.junit.Test;

public class CartTest {
    @Test
    public void addsItem() {
        System.out.println("adding to the cart");
        assertEquals(2, 1 + 1);
    }

    @Test
    public void computesTotal() {
        System.err.println("computing <total> & tax");
        assertEquals("total with tax", 12.5, 10 * 1.2, 0.001);
    }

    @Test
    public void throwsUnexpectedly() {
        throw new IllegalStateException("état inattendu");
    }

    @Ignore("payment sandbox is down")
    @Test
    public void paysByCheque() {}

    @Test
    public void assumptionFails() {
        Assume.assumeTrue("needs a database", false);
    }

    /** Fails on its first run, passes on a rerun: surefire writes a flakyFailure. */
    @Test
    public void flakyThenPasses() throws IOException {
        File marker = new File(System.getProperty("flaky.dir"), "CartTest.flaky");
        if (marker.createNewFile()) {
            assertTrue("first run fails", false);
        }
    }

    /** Errors on its first run, passes on a rerun: surefire writes a flakyError. */
    @Test
    public void flakyErrorThenPasses() throws IOException {
        File marker = new File(System.getProperty("flaky.dir"), "CartTest.flakyError");
        if (marker.createNewFile()) {
            throw new IOException("connection reset");
        }
    }
}
