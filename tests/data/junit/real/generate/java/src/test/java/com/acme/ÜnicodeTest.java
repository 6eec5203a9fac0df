package com.acme;

import static org.junit.Assert.assertEquals;

import org.junit.Test;

public class ÜnicodeTest {
    @Test
    public void straße() {
        assertEquals("STRASSE", "straße".toUpperCase());
    }

    @Test
    public void alwaysFails() {
        assertEquals("日本", "中国");
    }
}
